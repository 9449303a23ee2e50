"""Training sets as float32 [N, C, H, W] in [-1, 1] (docs/theory.md, "Data").

``load_dataset("mnist5k")`` is the bundled set of 5,000 MNIST digits (500 per class), padded
from 28x28 to 32x32 with background -1 as in the paper, which keeps every pixel exact.
``load_dataset(path)`` reads an ``.npz`` with ``images`` ([N, H, W], [N, C, H, W] or
[N, H, W, C]; uint8 in 0..255 or float in ``value_range``, by default [-1, 1]) and optional integer
``labels``. One layout rule holds for every dtype and for arrays in memory: ``layout="nchw"`` or
``"nhwc"`` names it, and without it the one reading with 1 or 3 channels is taken (a shape both
readings could mean is refused).

The standard sets are read from their own file formats under a root folder: ``mnist`` and
``fashion-mnist`` (IDX files, gzipped or not; padded to 32x32 by default, or resized
bilinearly as the paper's code did), ``cifar10`` (the python batches), and any folder of
images (``celeba`` is one): centre-cropped to a square and resized to 32x32, one channel when
every image is gray, labelled by sub-folder when the images sit in class sub-folders (whose names
``Dataset.class_names`` keeps). ``download=True`` fetches the
canonical files of mnist, fashion-mnist and cifar10 and checks their MD5 sums. Data already in
memory loads too: arrays and tensors of images, Hugging Face datasets, and any sequence (a torch
``Dataset``) of images or (image, label) pairs.
"""

from .dataset import Dataset
from .formats import BUNDLED, KNOWN, default_root
from .load import load_dataset, reload_dataset

__all__ = ["Dataset", "load_dataset", "reload_dataset", "BUNDLED", "KNOWN", "default_root"]
