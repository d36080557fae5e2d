//! septem-tests
