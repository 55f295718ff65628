"""Networks: motion VAE, diffusion U-Net, renderer and VGG16 features."""
