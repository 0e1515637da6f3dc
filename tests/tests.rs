//! Integration tests over real UDP on loopback: one test binary (link time), a module per
//! topic.

mod it;
