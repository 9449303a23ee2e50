"""What the project draws: images (:mod:`.images`), every plot (:mod:`.plots`) and the explore page
(:mod:`.explore`). Files are written through the one atomic writer, :mod:`elsmachine.files`."""
