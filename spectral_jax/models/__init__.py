"""Networks: spectral VAE, denoising U-Net with frequency attention, renderer, VGG16."""
