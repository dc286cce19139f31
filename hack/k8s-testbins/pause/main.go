// Command pause is the sandbox ("pause") container of the dev cluster's real nodes: it holds a pod's
// namespaces open and exits on SIGTERM or SIGINT. No image can be pulled here, so it is built from source.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	<-signals
}
