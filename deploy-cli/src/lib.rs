//! Library of the `deploy` command line.
