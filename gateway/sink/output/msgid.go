package output

import (
	"strconv"
	"time"
)

// MsgIDs are the message ids of a slab's records, back to back; reused
// every time the slab comes round (no allocation once grown).
type MsgIDs struct {
	buf []byte
	end []uint32
}

func (m *MsgIDs) Reset()   { m.buf, m.end = m.buf[:0], m.end[:0] }
func (m *MsgIDs) Len() int { return len(m.end) }

// Add appends the next record's id.
func (m *MsgIDs) Add(id []byte) {
	m.buf = append(m.buf, id...)
	m.end = append(m.end, uint32(len(m.buf)))
}

// AddNext appends the next record's id, the next of g.
func (m *MsgIDs) AddNext(g *IDGen) {
	m.buf = g.Next(m.buf)
	m.end = append(m.end, uint32(len(m.buf)))
}

// At returns record i's id, a view into m: valid until the next Reset,
// and, if m grows, pointing into the array it had (so a caller that
// keeps views adds every id first).
func (m *MsgIDs) At(i int) []byte {
	from := uint32(0)
	if i > 0 {
		from = m.end[i-1]
	}
	return m.buf[from:m.end[i]:m.end[i]]
}

// IDGen makes message ids "<gateway>-<start>-<sequence>" (start: when the
// output was made, in ns, base 36), so that no two records of one gateway,
// this run or another, share one. One goroutine only (the sink's writer).
type IDGen struct {
	pre []byte
	seq uint64
}

func NewIDGen(gateway string) IDGen {
	return IDGen{pre: []byte(gateway + "-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "-")}
}

// Next appends the next id to b.
func (g *IDGen) Next(b []byte) []byte {
	g.seq++
	return strconv.AppendUint(append(b, g.pre...), g.seq, 10)
}
