"""Running episodes: the step loop and its sinks (:mod:`~studio.episodes.runner`), episodes side by
side with lockstep decoding (:mod:`~studio.episodes.rollouts`), and the live view of a running
episode (:mod:`~studio.episodes.live`)."""
