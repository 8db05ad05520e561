package nodeconf

import (
	"bytes"
	"fmt"
	"time"

	"go.yaml.in/yaml/v3"
)

// The file's layout for the encoder; zero optional fields are left out.
type (
	fileConfig struct {
		Cluster       string            `yaml:"cluster"`
		ClusterID     uint32            `yaml:"cluster_id,omitempty"`
		Node          int               `yaml:"node"`
		Name          string            `yaml:"name,omitempty"`
		KeyFile       string            `yaml:"key_file"`
		DataDir       string            `yaml:"data_dir"`
		AdminSocket   string            `yaml:"admin_socket,omitempty"`
		Heartbeat     *fileHeartbeat    `yaml:"heartbeat,omitempty"`
		Links         []fileLink        `yaml:"links"`
		Peers         []filePeer        `yaml:"peers,omitempty"`
		Interconnect  *fileInterconnect `yaml:"interconnect,omitempty"`
		DiskHeartbeat *fileDisk         `yaml:"disk_heartbeat,omitempty"`
	}
	fileInterconnect struct {
		Network        string `yaml:"network"`
		Policy         Policy `yaml:"policy,omitempty"`
		ErrorThreshold int    `yaml:"error_threshold,omitempty"`
		ErrorWindow    string `yaml:"error_window,omitempty"`
		ErrorClean     string `yaml:"error_clean,omitempty"`
	}
	fileDisk struct {
		Path     string `yaml:"path"`
		Interval string `yaml:"interval,omitempty"`
		Timeout  string `yaml:"timeout,omitempty"`
	}
	fileHeartbeat struct {
		Interval        string `yaml:"interval,omitempty"`
		Multiplier      int    `yaml:"multiplier,omitempty"`
		Rise            int    `yaml:"rise,omitempty"`
		StallTimeout    string `yaml:"stall_timeout,omitempty"`
		ProgressTimeout string `yaml:"progress_timeout,omitempty"`
		Sweep           string `yaml:"sweep,omitempty"`
		Mode            Mode   `yaml:"mode,omitempty"`
	}
	fileLink struct {
		Name string       `yaml:"name"`
		UDP  *fileLinkUDP `yaml:"udp,omitempty"`
	}
	fileLinkUDP struct {
		Local string `yaml:"local"`
	}
	filePeer struct {
		ID   int               `yaml:"id"`
		Name string            `yaml:"name,omitempty"`
		UDP  map[string]string `yaml:"udp,omitempty"`
	}
)

// Marshal writes c as YAML that Parse accepts: zero optional fields are left out, so they take
// their defaults when parsed. It fails, naming the offending field, if c is not valid.
func (c *Config) Marshal() ([]byte, error) {
	dur := func(d time.Duration) string {
		if d == 0 {
			return ""
		}
		return d.String()
	}
	f := fileConfig{
		Cluster:     c.Cluster,
		ClusterID:   c.ClusterID,
		Node:        c.Node,
		Name:        c.Name,
		KeyFile:     c.KeyFile,
		DataDir:     c.DataDir,
		AdminSocket: c.AdminSocket,
		Links:       make([]fileLink, len(c.Links)),
	}
	if hb := c.Heartbeat; hb != (Heartbeat{}) {
		f.Heartbeat = &fileHeartbeat{
			Interval:        dur(hb.Interval),
			Multiplier:      hb.Multiplier,
			Rise:            hb.Rise,
			StallTimeout:    dur(hb.StallTimeout),
			ProgressTimeout: dur(hb.ProgressTimeout),
			Sweep:           dur(hb.Sweep),
			Mode:            hb.Mode,
		}
	}
	if ic := c.Interconnect; ic != (Interconnect{}) {
		f.Interconnect = &fileInterconnect{
			Policy: ic.Policy, ErrorThreshold: ic.ErrorThreshold,
			ErrorWindow: dur(ic.ErrorWindow), ErrorClean: dur(ic.ErrorClean),
		}
		if ic.Network.IsValid() {
			f.Interconnect.Network = ic.Network.String()
		}
	}
	if dh := c.DiskHeartbeat; dh != (DiskHeartbeat{}) {
		f.DiskHeartbeat = &fileDisk{Path: dh.Path, Interval: dur(dh.Interval), Timeout: dur(dh.Timeout)}
	}
	for i, l := range c.Links {
		f.Links[i].Name = l.Name
		if l.IsUDP() {
			f.Links[i].UDP = &fileLinkUDP{Local: l.UDP.String()}
		}
	}
	for i, p := range c.Peers {
		fp := filePeer{ID: p.ID, Name: p.Name}
		for j, ap := range p.UDP {
			if !ap.IsValid() {
				continue
			}
			if j >= len(c.Links) {
				return nil, fmt.Errorf("marshal node config: peers[%d]: endpoint %v for link %d, but there are %d links",
					i, ap, j, len(c.Links))
			}
			if fp.UDP == nil {
				fp.UDP = make(map[string]string)
			}
			fp.UDP[c.Links[j].Name] = ap.String()
		}
		f.Peers = append(f.Peers, fp)
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&f); err != nil {
		return nil, fmt.Errorf("marshal node config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("marshal node config: %w", err)
	}
	// Parsing the result applies every rule of the format to c, once and in one place.
	if _, err := Parse("<marshalled config>", buf.Bytes()); err != nil {
		return nil, fmt.Errorf("marshal node config: %w", err)
	}
	return buf.Bytes(), nil
}
