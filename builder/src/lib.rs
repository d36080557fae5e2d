//! septem-build
