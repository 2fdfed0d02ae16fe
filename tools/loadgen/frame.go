package loadgen

import (
	"fmt"

	"github.com/xgate/xgate/packet"
)

// AppendFrame appends the generator's frame for f to buf: f as package
// packet builds it, with the IPv4 header checksum filled in and DF set
// (UDP checksum 0: "no checksum", which IPv4 allows). The generator sends
// IPv4 only.
func AppendFrame(buf []byte, f packet.Frame) ([]byte, error) {
	if !f.Src.Is4() || !f.Dst.Is4() {
		return buf, fmt.Errorf("loadgen: frame needs IPv4 addresses, got %v → %v", f.Src, f.Dst)
	}
	f.Checksum = true
	f.Frag |= packet.IPv4DF
	return f.Append(buf)
}
