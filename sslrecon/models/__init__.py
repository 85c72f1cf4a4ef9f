"""Backbones. The foundation has the residual U-Net; DnCNN and blind-spot networks come later."""
from .unet import UNet, UNetConfig

__all__ = ["UNet", "UNetConfig"]
