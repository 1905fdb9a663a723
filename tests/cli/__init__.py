"""The command line, the installed package, and the extension seams seen from outside."""
