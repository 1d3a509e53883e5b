"""facegen: faces as a language. VQ-VAE tokens + GPT-2, taught in seven notebooks."""

__version__ = "0.1.0"
