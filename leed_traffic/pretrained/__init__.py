"""The pretrained phase policy shipped with leed-traffic (data: phase_policy.pt, DATA_CARD.md)."""
