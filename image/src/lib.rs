//! septem-image
