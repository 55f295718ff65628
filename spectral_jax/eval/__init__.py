"""Evaluation: motion errors of a model against measured motion
(`motion_metrics`, `motion_eval`), distances between feature sets
(`distances`: Fréchet, KID), the I3D video network (`i3d`) and FVD (`fvd`),
frame feature networks for FID and KID (`features`, `inception`)."""
