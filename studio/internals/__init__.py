"""Inside the network while the agent acts: steering vectors (:mod:`.vectors`, made by
:mod:`.making`), the residual stream of stored steps (:mod:`.activations`), the logit lens
(:mod:`.lens`), probes of what the agent represents about its world (:mod:`.probes`), and how much
each output token depends on the observation (:mod:`.perception`)."""
