"""What the project writes: one atomic writer and sample files (:mod:`.files`), images
(:mod:`.images`), and every plot (:mod:`.plots`)."""
