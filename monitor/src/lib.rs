//! septem-monitor
