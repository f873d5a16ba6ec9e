//go:build unix && !linux

package sandbox

// mapNoReserve is Linux's MAP_NORESERVE; elsewhere mappings reserve no
// swap up front anyway.
const mapNoReserve = 0
