"""The learned miniature diffusion prior (DESIGN §5b): trained by ``python -m lucid_app train-prior``.

Modules, one job each: ``tokenizer`` (a CLIP BPE tokenizer built from the captions), ``data`` (the dataset's train
views and their captions), ``model`` (the UNet and text encoder configs), ``objective`` (what the UNet predicts and
how each timestep's loss is weighted), ``train`` (the training loop and its state), ``sampling`` (DDIM samples for
``samples.png``), ``folder`` (the prior folder's format, read and written), ``command`` (the CLI sub-command). The
loader the app uses is :mod:`lucid_app.priors.learned`.
"""
