//! septem-libos
