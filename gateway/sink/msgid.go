package sink

import (
	"strconv"
	"time"
)

// msgIDs are the message ids of a slab's records, back to back; reused
// every time the slab comes round (no allocation once grown).
type msgIDs struct {
	buf []byte
	end []uint32
}

func (m *msgIDs) reset()   { m.buf, m.end = m.buf[:0], m.end[:0] }
func (m *msgIDs) len() int { return len(m.end) }

func (m *msgIDs) add(id []byte) {
	m.buf = append(m.buf, id...)
	m.end = append(m.end, uint32(len(m.buf)))
}

// at returns record i's id, a view into m (valid until the next reset).
func (m *msgIDs) at(i int) []byte {
	from := uint32(0)
	if i > 0 {
		from = m.end[i-1]
	}
	return m.buf[from:m.end[i]:m.end[i]]
}

// idGen makes message ids "<gateway>-<start>-<sequence>" (start: the
// process's start in ns, base 36), so that no two records of one gateway,
// this run or another, share one. Writer goroutine only.
type idGen struct {
	pre []byte
	seq uint64
}

func newIDGen(gateway string) idGen {
	return idGen{pre: []byte(gateway + "-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "-")}
}

// next appends the next id to b.
func (g *idGen) next(b []byte) []byte {
	g.seq++
	return strconv.AppendUint(append(b, g.pre...), g.seq, 10)
}
