package config

import (
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/xgate/xgate/engine"
)

// TestListsConfig: lists load relative to the config's directory, rules
// and added fields compile against them, and cidr lists feed xdp.
func TestListsConfig(t *testing.T) {
	c, err := Parse(filepath.Join("testdata", "lists.yaml"), []byte(`listen: {ports: [9000]}
lists:
  partners:  {type: cidr, file: lists/partners.txt}
  vip:       {type: set,  file: lists/vip.txt}
  risk_tier: {type: map,  file: lists/risk.csv, max_entries: 10}
enrich:
  - {field: risk_tier, from: 'lookup("risk_tier", user_id)'}
rules:
  - name: partner
    when: src_ip in cidrs("partners")
    action: pass
    enrich: [{field: partner, from: 'true == true'}]
  - name: vip
    when: user_id in set("vip") && lookup("risk_tier", user_id) == "high"
    action: alert
xdp:
  drop: [192.0.2.0/24]
  never_block_lists: [partners]
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Lists) != 3 || c.Lists[0].Path != filepath.Join("testdata", "lists", "partners.txt") || c.Lists[2].MaxEntries != 10 {
		t.Fatalf("lists %+v", c.Lists)
	}
	p := c.ListByName("partners")
	if p.Data == nil || !p.Data.ContainsAddr(netip.MustParseAddr("203.0.113.7")) || p.Data.Len() != 2 {
		t.Errorf("partners not loaded: %+v", p)
	}
	ec := c.EngineConfig()
	if len(ec.Lists) != 3 || len(ec.Enrich) != 1 || len(ec.Rules[0].Enrich) != 1 {
		t.Fatalf("engine config %+v", ec)
	}
	e, err := engine.New(ec)
	if err != nil {
		t.Fatal(err)
	}
	ds := e.NewWorker().Process([]byte(`{"user_id":"u-1"}`), netip.Addr{})
	if ds[0].Action != engine.ActionAlert || string(ds[0].Extra) != `,"risk_tier":"high"` {
		t.Errorf("decision %+v extra %s", ds[0], ds[0].Extra)
	}
}
