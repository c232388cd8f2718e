// Package deploy holds no code: its folder holds the ways to run the agent
// (kubernetes/: a DaemonSet; systemd/: a unit for VMs) and its tests check
// them, and the Dockerfile at the repository's root, against the code:
// manifests decode strictly into the Kubernetes API types, the memory
// figures follow from the configuration they ship, the shutdown grace
// outlasts shutdown_timeout, probes and paths point where the agent
// listens and writes, and no credential is written down.
package deploy
