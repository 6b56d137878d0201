//! Condition reasons of the PD layer (CamelCase, stable: users and alerts match on them).

/// The initial members were created and have not formed a PD cluster yet.
pub const WAITING_FOR_BOOTSTRAP: &str = "WaitingForBootstrap";
/// A new member has not become ready/healthy yet; the next one waits.
pub const WAITING_FOR_MEMBER: &str = "WaitingForMember";
/// A member is being removed; the next change waits.
pub const REMOVING_MEMBER: &str = "RemovingMember";
/// PD cannot be reached; nothing destructive happens.
pub const PD_UNAVAILABLE: &str = "PDUnavailable";
/// A scale-in is refused because a member other than the one to remove is unhealthy.
pub const MEMBER_UNHEALTHY: &str = "MemberUnhealthy";
/// A removal is refused because the remaining members would lose quorum.
pub const QUORUM_AT_RISK: &str = "QuorumAtRisk";
/// The last member of a PD cluster cannot be removed.
pub const LAST_MEMBER: &str = "LastMember";
/// The PD leader cannot hand over leadership: no other healthy member.
pub const NO_LEADER_TRANSFER_TARGET: &str = "NoLeaderTransferTarget";
/// Another PDGroup already serves the Cluster; this one creates nothing.
pub const DUPLICATE_PD_GROUP: &str = "DuplicatePDGroup";
/// The user's configuration sets a key the operator owns, or is not valid TOML.
pub const INVALID_CONFIG: &str = "InvalidConfig";
/// The spec cannot be rendered (e.g. a reserved volume name).
pub const INVALID_SPEC: &str = "InvalidSpec";
/// Everything matches the spec.
pub const SYNCED: &str = "Synced";
/// The running Pod was started with an older configuration than the one rendered now.
pub const RESTART_PENDING: &str = "RestartPending";
/// An outdated member is being restarted.
pub const RESTARTING: &str = "Restarting";
/// The template's version is lower than what members run.
pub const DOWNGRADE_REFUSED: &str = "DowngradeRefused";
