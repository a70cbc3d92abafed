//! vrouter-xen (skeleton; see docs/).
