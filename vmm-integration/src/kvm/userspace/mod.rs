//! KVM userspace flush path (integrator-owned).
