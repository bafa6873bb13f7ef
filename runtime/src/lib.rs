//! Host side of Cloister: sandbox lifecycle, hypervisor drivers and the agent client.
