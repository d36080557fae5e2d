//! `runnc`: the command line (see the `runnc` library).

fn main() {}
