//! vrouter-agent (skeleton; see docs/).
