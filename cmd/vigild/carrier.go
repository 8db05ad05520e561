package main

import (
	"context"
	"fmt"
	"log/slog"
	"syscall"

	"github.com/vishvananda/netlink"
)

// watchCarrier reports local carrier changes of the given interfaces (ifindex -> link id) to
// set. Netlink is only a confirmation for the heartbeat plane: it lets a link that lost carrier
// here go down at once instead of after the detection time, but detection never depends on it
// (for physical NICs the kernel may report carrier loss a second late).
func watchCarrier(ctx context.Context, links map[int]uint8, set func(link uint8, down bool) error, log *slog.Logger) error {
	updates := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	if err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{
		ErrorCallback: func(err error) {
			if ctx.Err() == nil {
				log.Warn("netlink link subscription", "err", err)
			}
		},
	}); err != nil {
		close(done)
		return fmt.Errorf("subscribe to netlink link events: %w", err)
	}
	down := map[uint8]bool{}
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case u, ok := <-updates:
				if !ok {
					return
				}
				id, ours := links[int(u.Index)]
				if !ours {
					continue
				}
				flags := u.Attrs().RawFlags
				isDown := flags&syscall.IFF_UP == 0 || flags&syscall.IFF_RUNNING == 0
				if isDown == down[id] {
					continue
				}
				down[id] = isDown
				log.Info("local carrier change", "interface", u.Attrs().Name, "link", id, "carrier", !isDown)
				if err := set(id, isDown); err != nil {
					log.Error("mark link", "link", id, "down", isDown, "err", err)
				}
			}
		}
	}()
	return nil
}
