/* udp-counter: the lab's UDP service. Answers every datagram on UDP port PORT (argv[1],
 * default 5353) with "N TEXT", N counting the datagrams it has had since it started: a
 * count only its memory holds, so a moved copy that goes on counting was not restarted. */
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

int main(int argc, char **argv) {
    struct sockaddr_in me = {.sin_family = AF_INET, .sin_port = htons(argc > 1 ? atoi(argv[1]) : 5353)};
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0 || bind(s, (struct sockaddr *)&me, sizeof me) < 0) {
        perror("udp-counter");
        return 1;
    }
    unsigned long n = 0;
    for (;;) {
        char in[512], out[600];
        struct sockaddr_in peer;
        socklen_t len = sizeof peer;
        ssize_t got = recvfrom(s, in, sizeof in - 1, 0, (struct sockaddr *)&peer, &len);
        if (got < 0)
            continue;
        in[got] = 0;
        int k = snprintf(out, sizeof out, "%lu %s", ++n, in);
        sendto(s, out, k, 0, (struct sockaddr *)&peer, len);
    }
}
