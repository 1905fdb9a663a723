"""Episodes recorded elsewhere, read into the studio's trace records.

One file per format (``inspect``, ``chat``, ``agentlab``, ``lerobot``), each registered by name in
:mod:`studio.importers.registry`; installed packages add their own through the
``agent_studio.importers`` entry point group. An importer streams: it yields one
:class:`~studio.trace.Episode` at a time and never holds a whole file. Everything it reads is
untrusted (checked field by field, pickles read by a restricted unpickler that builds plain data only).
"""
