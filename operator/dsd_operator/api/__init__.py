"""The DSD custom resources (group dsd.dev, version v1alpha1): typed models, the single source of the CRDs."""

from dsd_operator.api.v1alpha1 import (
    GROUP,
    VERSION,
    DraftRole,
    DSDDeploymentSpec,
    ModelRef,
    RoleScalerSpec,
    Speculation,
    TargetRole,
)

__all__ = ["GROUP", "VERSION", "DSDDeploymentSpec", "DraftRole", "ModelRef", "RoleScalerSpec", "Speculation",
           "TargetRole"]
