//! Cluster harness for ringdb.
