package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"vigil/control/admin"
)

// DRDCmd groups the DRD management commands (TruCluster's drdmgr): devices defined in the
// cluster database, served by one node at a time.
type DRDCmd struct {
	Create   DRDCreateCmd   `cmd:"" help:"Define a DRD device: a backing file or block device that the given nodes reach at the same path."`
	Delete   DRDDeleteCmd   `cmd:"" help:"Delete a DRD device (its server stops; the backing is left as it is)."`
	List     DRDListCmd     `cmd:"" help:"List the DRD devices and where each is served."`
	Status   DRDStatusCmd   `cmd:"" help:"Show DRD devices in detail, and what this node serves."`
	Relocate DRDRelocateCmd `cmd:"" help:"Move serving a DRD device to another of its nodes; clients re-send what is in flight and carry on."`
}

// DRDCreateCmd defines a device.
type DRDCreateCmd struct {
	Name    string   `arg:"" help:"Device name."`
	Backing string   `required:"" help:"Absolute path of the backing file or block device on the serving node (O_DIRECT)." placeholder:"PATH"`
	Nodes   []string `required:"" help:"The nodes that reach the backing and may serve the device, in order of preference (comma-separated names)." placeholder:"NODE,..."`
	Size    string   `help:"Device size: bytes, or with a K, M, G or T suffix (powers of 1024); a multiple of 4096. Default: the backing's size." placeholder:"SIZE"`
}

// parseSize reads 4096, 64M, 1G (powers of 1024).
func parseSize(s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	mult := uint64(1)
	num := s
	switch strings.ToUpper(s[len(s)-1:]) {
	case "K":
		mult = 1 << 10
	case "M":
		mult = 1 << 20
	case "G":
		mult = 1 << 30
	case "T":
		mult = 1 << 40
	}
	if mult != 1 {
		num = s[:len(s)-1]
	}
	n, err := strconv.ParseUint(num, 10, 64)
	if err != nil || n == 0 || n > (1<<60)/mult {
		return 0, fmt.Errorf("--size %q: want a positive number of bytes, or with a K, M, G or T suffix", s)
	}
	if n*mult%4096 != 0 {
		return 0, fmt.Errorf("--size %q: %d bytes is not a multiple of the 4096-byte block", s, n*mult)
	}
	return n * mult, nil
}

// Run commits the new device.
func (c DRDCreateCmd) Run(g *Globals, out io.Writer) error {
	size, err := parseSize(c.Size)
	if err != nil {
		return err
	}
	res, err := query(g, func(cl *admin.Client) (admin.DRDChange, error) {
		return cl.DRDCreate(admin.DRDDefine{Name: c.Name, Backing: c.Backing, Nodes: c.Nodes, Size: size})
	})
	if err != nil {
		return fmt.Errorf("create drd device %s: %w", c.Name, err)
	}
	if g.JSON {
		return printJSON(out, res)
	}
	_, err = fmt.Fprintf(out, "drd device %s created at index %d; the cluster places it on the first running node of %s\n",
		c.Name, res.Index, strings.Join(c.Nodes, ", "))
	return err
}

// DRDDeleteCmd deletes a device.
type DRDDeleteCmd struct {
	Name string `arg:"" help:"Device name."`
}

// Run commits the deletion.
func (c DRDDeleteCmd) Run(g *Globals, out io.Writer) error {
	res, err := query(g, func(cl *admin.Client) (admin.DRDChange, error) { return cl.DRDDelete(c.Name) })
	if err != nil {
		return fmt.Errorf("delete drd device %s: %w", c.Name, err)
	}
	if g.JSON {
		return printJSON(out, res)
	}
	_, err = fmt.Fprintf(out, "drd device %s deleted at index %d\n", c.Name, res.Index)
	return err
}

// DRDListCmd lists the devices.
type DRDListCmd struct{}

func serving(d admin.DRDDevice) string {
	switch {
	case d.Node == 0:
		return "-"
	case d.NodeName != "":
		return fmt.Sprintf("%d %s", d.Node, d.NodeName)
	}
	return strconv.Itoa(d.Node)
}

func drdState(d admin.DRDDevice) string {
	switch {
	case d.Node == 0:
		return "unplaced"
	case !d.Ready:
		return fmt.Sprintf("moving (node %d stopping)", d.Releasing)
	}
	return "placed"
}

func sizeText(n uint64) string {
	if n == 0 {
		return "backing"
	}
	for _, u := range []struct {
		s    string
		mult uint64
	}{{"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if n%u.mult == 0 {
			return fmt.Sprintf("%d%s", n/u.mult, u.s)
		}
	}
	return strconv.FormatUint(n, 10)
}

// Run prints one line per device.
func (DRDListCmd) Run(g *Globals, out io.Writer) error {
	l, err := query(g, (*admin.Client).DRDList)
	if err != nil {
		return err
	}
	if g.JSON {
		return printJSON(out, l)
	}
	if l.Stale {
		fmt.Fprintf(out, "STALE: %s\n", l.Reason)
	}
	if len(l.Devices) == 0 {
		_, err := fmt.Fprintln(out, "no drd devices (vigil drd create)")
		return err
	}
	tw := table(out)
	fmt.Fprintln(tw, "DEVICE\tSIZE\tBACKING\tNODES\tSERVED BY\tEPOCH\tSTATE")
	for _, d := range l.Devices {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", d.Name, sizeText(d.Size), d.Backing, strings.Join(d.Nodes, ","),
			serving(d), d.Epoch, drdState(d))
	}
	return tw.Flush()
}

// DRDStatusCmd shows devices in detail.
type DRDStatusCmd struct {
	Name string `arg:"" optional:"" help:"Device name (default: every device)."`
}

// Run prints each device and what this node serves of it.
func (c DRDStatusCmd) Run(g *Globals, out io.Writer) error {
	l, err := query(g, (*admin.Client).DRDList)
	if err != nil {
		return err
	}
	if c.Name != "" {
		var keep []admin.DRDDevice
		for _, d := range l.Devices {
			if d.Name == c.Name {
				keep = append(keep, d)
			}
		}
		if keep == nil {
			return fmt.Errorf("no drd device %q", c.Name)
		}
		l.Devices = keep
		var served []admin.DRDServed
		for _, s := range l.Served {
			if s.Device == c.Name {
				served = append(served, s)
			}
		}
		l.Served = served
	}
	if g.JSON {
		return printJSON(out, l)
	}
	if l.Stale {
		fmt.Fprintf(out, "STALE: %s\n", l.Reason)
	}
	for i, d := range l.Devices {
		if i > 0 {
			fmt.Fprintln(out)
		}
		tw := table(out)
		fmt.Fprintf(tw, "Device:\t%s\n", d.Name)
		fmt.Fprintf(tw, "Backing:\t%s\n", d.Backing)
		fmt.Fprintf(tw, "Size:\t%s, %d-byte blocks\n", sizeText(d.Size), d.BlockSize)
		fmt.Fprintf(tw, "Nodes:\t%s\n", strings.Join(d.Nodes, ", "))
		fmt.Fprintf(tw, "Served by:\t%s\n", serving(d))
		fmt.Fprintf(tw, "Epoch:\t%d (placed at index %d)\n", d.Epoch, d.Since)
		fmt.Fprintf(tw, "State:\t%s\n", drdState(d))
		for _, s := range l.Served {
			if s.Device != d.Name {
				continue
			}
			if s.Error != "" {
				fmt.Fprintf(tw, "Here:\tFAILED at epoch %d: %s\n", s.Epoch, s.Error)
				continue
			}
			fmt.Fprintf(tw, "Here:\tserving epoch %d, %d bytes, since %s\n", s.Epoch, s.Size, s.Since)
			fmt.Fprintf(tw, "Local path:\t%s\n", s.Local)
			fmt.Fprintf(tw, "Remote path:\t%s\n", s.Remote)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

// DRDRelocateCmd moves a device.
type DRDRelocateCmd struct {
	Name string        `arg:"" help:"Device name."`
	Node string        `arg:"" help:"The node to serve it (name or id): one of the device's nodes, running."`
	Wait time.Duration `default:"10s" help:"How long to wait for the old server to stop and the new one to take over (0: do not wait)."`
}

// Run commits the new placement and waits for the hand-over.
func (c DRDRelocateCmd) Run(g *Globals, out io.Writer) error {
	if c.Wait < 0 || c.Wait > time.Minute {
		return errors.New("--wait: want 0 to 1m")
	}
	res, err := query(g, func(cl *admin.Client) (admin.DRDChange, error) {
		return cl.DRDRelocate(admin.DRDMove{Name: c.Name, Node: c.Node, WaitMS: int(c.Wait / time.Millisecond)})
	})
	if err != nil {
		return fmt.Errorf("relocate drd device %s: %w", c.Name, err)
	}
	if g.JSON {
		return printJSON(out, res)
	}
	d := res.Device
	switch {
	case d == nil:
		_, err = fmt.Fprintf(out, "drd device %s relocated at index %d\n", c.Name, res.Index)
	case d.Ready:
		_, err = fmt.Fprintf(out, "drd device %s served by node %s at epoch %d (index %d)\n", c.Name, serving(*d), d.Epoch, res.Index)
	default:
		_, err = fmt.Fprintf(out, "drd device %s placed on node %s at epoch %d (index %d); node %d has not stopped serving it yet\n",
			c.Name, serving(*d), d.Epoch, res.Index, d.Releasing)
	}
	return err
}
