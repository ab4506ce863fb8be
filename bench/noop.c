/* The benchmark floor: a do-nothing CNI plugin. It answers every call with a
 * fixed, valid result so the driver does the same work it does for a real
 * plugin, and nothing else. Built static, like cnibox's fastest build. */
#include <string.h>
#include <unistd.h>
#include <stdlib.h>

static const char result[] =
    "{\"cniVersion\":\"1.0.0\",\"interfaces\":[{\"name\":\"eth0\",\"sandbox\":\"/x\"}],"
    "\"ips\":[{\"address\":\"10.99.0.2/24\",\"gateway\":\"10.99.0.1\",\"interface\":0}]}\n";

int main(void) {
    char buf[65536];
    while (read(0, buf, sizeof buf) > 0) {
    }
    const char *cmd = getenv("CNI_COMMAND");
    if (cmd && (strcmp(cmd, "ADD") == 0 || strcmp(cmd, "VERSION") == 0))
        (void)!write(1, result, sizeof result - 1);
    return 0;
}
