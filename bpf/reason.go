package bpf

import (
	"strconv"
	"strings"
	"sync"

	"github.com/cilium/ebpf/btf"
)

// Reason is why the XDP program let a packet go (enum xgate_reason). Values
// below ReasonTerminal are terminal: each packet is counted under exactly one.
// The others are events counted on the way.
type Reason uint32

// The reasons, tied at compile time to the C enum through bpf2go.
const (
	ReasonRedirect        = Reason(XdpXgateReasonXGATE_R_REDIRECT)
	ReasonPassSocket      = Reason(XdpXgateReasonXGATE_R_PASS_SOCKET)
	ReasonPassNoXSK       = Reason(XdpXgateReasonXGATE_R_PASS_NO_XSK)
	ReasonNotIP           = Reason(XdpXgateReasonXGATE_R_NOT_IP)
	ReasonVLANTooDeep     = Reason(XdpXgateReasonXGATE_R_VLAN_TOO_DEEP)
	ReasonNotUDP          = Reason(XdpXgateReasonXGATE_R_NOT_UDP)
	ReasonPortNotListened = Reason(XdpXgateReasonXGATE_R_PORT_NOT_LISTENED)
	ReasonIPv4Fragment    = Reason(XdpXgateReasonXGATE_R_IPV4FRAGMENT)
	ReasonIPv6ExtHdr      = Reason(XdpXgateReasonXGATE_R_IPV6EXT_HDR)
	ReasonMalformedEth    = Reason(XdpXgateReasonXGATE_R_MALFORMED_ETH)
	ReasonMalformedVLAN   = Reason(XdpXgateReasonXGATE_R_MALFORMED_VLAN)
	ReasonMalformedIPv4   = Reason(XdpXgateReasonXGATE_R_MALFORMED_IPV4)
	ReasonMalformedIPv6   = Reason(XdpXgateReasonXGATE_R_MALFORMED_IPV6)
	ReasonMalformedUDP    = Reason(XdpXgateReasonXGATE_R_MALFORMED_UDP)
	ReasonBlocked         = Reason(XdpXgateReasonXGATE_R_BLOCKED)
	ReasonRateLimited     = Reason(XdpXgateReasonXGATE_R_RATE_LIMITED)
	ReasonBucketContended = Reason(XdpXgateReasonXGATE_R_BUCKET_CONTENDED)
	ReasonPayloadNotJSON  = Reason(XdpXgateReasonXGATE_R_PAYLOAD_NOT_JSON)
	ReasonNoConfig        = Reason(XdpXgateReasonXGATE_R_NO_CONFIG)
	ReasonStampFailed     = Reason(XdpXgateReasonXGATE_R_STAMP_FAILED)
	ReasonVLANNotServed   = Reason(XdpXgateReasonXGATE_R_VLAN_NOT_SERVED)
	ReasonIPv6NotServed   = Reason(XdpXgateReasonXGATE_R_IPV6NOT_SERVED)
	ReasonCIDRDrop        = Reason(XdpXgateReasonXGATE_R_CIDR_DROP)
	ReasonGroupNotJoined  = Reason(XdpXgateReasonXGATE_R_GROUP_NOT_JOINED)
	ReasonNotOurAddress   = Reason(XdpXgateReasonXGATE_R_NOT_OUR_ADDRESS)
	// ReasonTerminal is the number of terminal reasons.
	ReasonTerminal = Reason(XdpXgateReasonXGATE_R__TERMINAL)

	EventBlockExpired   = Reason(XdpXgateReasonXGATE_EV_BLOCK_EXPIRED)
	EventBucketCASRetry = Reason(XdpXgateReasonXGATE_EV_BUCKET_CAS_RETRY)
	EventMetaFailed     = Reason(XdpXgateReasonXGATE_EV_META_FAILED)
	EventBlockFilterFP  = Reason(XdpXgateReasonXGATE_EV_BLOCK_FILTER_FP)
	EventBucketTakeover = Reason(XdpXgateReasonXGATE_EV_BUCKET_TAKEOVER)
	EventNeverBlock     = Reason(XdpXgateReasonXGATE_EV_NEVER_BLOCK)
	// ReasonMax is the number of counters (terminal reasons and events).
	ReasonMax = Reason(XdpXgateReasonXGATE_R__MAX)
)

// Terminal reports whether r decides a packet's fate (as opposed to an event).
func (r Reason) Terminal() bool { return r < ReasonTerminal }

// Fate is what became of a packet counted under a terminal reason: the
// terms of the accounting identity the XDP program contributes.
type Fate uint8

const (
	FateDropped  Fate = iota // XDP_DROP: malformed, blocked, over its bucket, not JSON
	FateNotForUs             // XDP_PASS to the stack: not IP/UDP, other ports, fragments, v6 ext headers, groups not joined, other addresses
	FateSurvivor             // ours: redirected to AF_XDP or passed to our sockets
)

// Fate classifies a terminal reason; it mirrors the verdicts in xdp.c (a
// test holds every fixture's verdict against it).
func (r Reason) Fate() Fate {
	switch r {
	case ReasonRedirect, ReasonPassSocket, ReasonPassNoXSK:
		return FateSurvivor
	case ReasonNotIP, ReasonVLANTooDeep, ReasonNotUDP, ReasonPortNotListened,
		ReasonIPv4Fragment, ReasonIPv6ExtHdr, ReasonNoConfig, ReasonGroupNotJoined, ReasonNotOurAddress:
		return FateNotForUs
	}
	return FateDropped
}

// String is the enum name without its XGATE_R_/XGATE_EV_ prefix, lower case
// ("port_not_listened", "block_expired"): read from the object's BTF, so a
// reason added in C gets its name without a Go change.
func (r Reason) String() string {
	names := enumNames()
	if int(r) < len(names.xdp) && names.xdp[r] != "" {
		return names.xdp[r]
	}
	return "reason_" + strconv.FormatUint(uint64(r), 10)
}

// RpReason is why the sk_reuseport program decided as it did
// (enum xgate_rp_reason).
type RpReason uint32

const (
	RpSelected    = RpReason(ReuseportXgateRpReasonXGATE_RP_SELECTED)
	RpNodeUnknown = RpReason(ReuseportXgateRpReasonXGATE_RP_NODE_UNKNOWN)
	RpNodeEmpty   = RpReason(ReuseportXgateRpReasonXGATE_RP_NODE_EMPTY)
	RpSlotEmpty   = RpReason(ReuseportXgateRpReasonXGATE_RP_SLOT_EMPTY)
	RpNoConfig    = RpReason(ReuseportXgateRpReasonXGATE_RP_NO_CONFIG)
	RpReasonMax   = RpReason(ReuseportXgateRpReasonXGATE_RP__MAX)
)

// String is the enum name without XGATE_RP_, lower case ("slot_empty").
func (r RpReason) String() string {
	names := enumNames()
	if int(r) < len(names.rp) && names.rp[r] != "" {
		return names.rp[r]
	}
	return "rp_reason_" + strconv.FormatUint(uint64(r), 10)
}

type reasonNames struct {
	xdp [ReasonMax]string
	rp  [RpReasonMax]string
}

var enumNames = sync.OnceValue(func() *reasonNames {
	n := &reasonNames{}
	if spec, err := LoadXdp(); err == nil {
		var e *btf.Enum
		if spec.Types.TypeByName("xgate_reason", &e) == nil {
			fillNames(n.xdp[:], e, "XGATE_R_", "XGATE_EV_")
		}
	}
	if spec, err := LoadReuseport(); err == nil {
		var e *btf.Enum
		if spec.Types.TypeByName("xgate_rp_reason", &e) == nil {
			fillNames(n.rp[:], e, "XGATE_RP_")
		}
	}
	return n
})

// fillNames keeps the first real name per value; sentinels ("__" after the
// prefix) never name a value.
func fillNames(dst []string, e *btf.Enum, prefixes ...string) {
	for _, v := range e.Values {
		name := v.Name
		for _, p := range prefixes {
			name = strings.TrimPrefix(name, p)
		}
		if strings.HasPrefix(name, "_") || v.Value >= uint64(len(dst)) || dst[v.Value] != "" {
			continue
		}
		dst[v.Value] = strings.ToLower(name)
	}
}
