"""facehd models: HRN's networks, losses and configuration.

- :mod:`models.analyzer` -- the face analyzer (ResNet-50 coefficient regressor, Deep3DFaceRecon
  ``net_recon`` layout), :class:`~models.analyzer.Coefficients`, checkpoint loading.
- :mod:`models.pix2pix`, :mod:`models.discriminator` -- pix2pix ResNet generators, PatchGANs.
- :mod:`models.deretouch` -- the de-retouching module (paper Eq. 3-6).
- :mod:`models.realign` -- texture re-alignment through the deformation's reversal flow.
- :mod:`models.hrn` -- HRN's detail forward pass and the official checkpoint layout.
- :mod:`models.losses` -- every loss as a small function; :mod:`models.config` -- typed config.
"""
