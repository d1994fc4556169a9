"""Avatar mode: a posed SMPL body (``body.py``), Gaussians on its surface (``init.py``) and the DensePose-style
body-part maps that condition a ControlNet for every sampled camera (``partmap.py``)."""
