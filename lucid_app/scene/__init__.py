"""The 3D scene being optimised: the Gaussians (parameters, activations, optimiser), adaptive density control,
initial shapes (volumes, point clouds, meshes, optional Point-E) and the coloured primitives of the demo objects."""
