#[derive(Debug, Clone)]
#[derive(Default)]
pub(crate) struct CommandState {
    /// The sequence number of the last finished sm command.
    pub(crate) finished_sm_seq: u64,

    /// berqenas patch: the sequence numbers of the last snapshot install sent to the sm worker
    /// and of the last one it finished (installs finish in order; builds, which finish out of
    /// order, move `finished_sm_seq` back, so it cannot tell).
    pub(crate) sent_install_seq: u64,
    pub(crate) finished_install_seq: u64,
}
