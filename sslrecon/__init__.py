"""sslrecon: self-supervised denoising and reconstruction of scientific images from noisy measurements alone."""
__version__ = "0.1.0"
