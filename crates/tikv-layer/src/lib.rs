//! The TiKV layer of tikv-operator: TiKVGroups and their TiKV instances.
//!
//! Under construction (issue #6): nothing here is wired into the operator yet.
