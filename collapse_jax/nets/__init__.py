"""Flax modules the model families use: UNet, VAE encoder/decoder, MLPs, transformer, GNNs."""
