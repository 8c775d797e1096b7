/* Loopback TCP load: connect, a small request and response, close; as fast as it goes, or at a set rate.
 *
 * One listening socket on 127.0.0.1 (an ephemeral port), THREADS server threads
 * accepting on it and THREADS client threads, each client doing, until COUNT
 * connections are done or SECONDS have passed:
 *   connect; write SIZE bytes; read SIZE bytes back; close.
 * The server reads the request, writes it back, waits for the client's FIN, and
 * closes: both sides end orderly (client FIN_WAIT2 -> CLOSE, server LAST_ACK -> CLOSE),
 * so a tracer sees each connection opened and closed once per side.
 *
 * RATE (connections per second, all clients together; 0: unlimited) paces the clients: connection n
 * starts no earlier than n / RATE seconds after the start, so a tracer can be compared with another at
 * one load it keeps up with. UDP (datagrams per connection, default 0) adds UDP traffic to each
 * connection: after its close, the client sends that many SIZE-byte datagrams to a UDP echo socket on
 * 127.0.0.1 and reads each one back (THREADS echo threads serve it), for a TCP+UDP workload.
 *
 * Prints one JSON object: {"connections": N, "errors": E, "seconds": S, "per_second": R, "cpu_s": C,
 * "port": P, ...}, P being the TCP listening port (a tracer's output lines for these connections name it),
 * C being the CPU time of the whole process (both sides of every connection, with the kernel's
 * work done on their behalf, tracers' programs included): steadier than the rate on a busy machine.
 * Exit status 0 when every connection attempted completed, 1 when some failed, 2 on bad usage.
 *
 *   loadgen COUNT SECONDS [THREADS [SIZE [RATE [UDP]]]]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 64
#define MAX_SIZE 65536

static long count_wanted;
static double seconds_allowed;
static int size;
static double rate;
static int udp_per_connection;
static int listen_fd, udp_fd;
static struct sockaddr_in server_addr, udp_addr;
static atomic_long claimed, completed, errors;
static double started;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int transfer(int fd, char *buffer, int length, int writing)
{
	int done = 0;
	while (done < length) {
		ssize_t n = writing ? write(fd, buffer + done, length - done) : read(fd, buffer + done, length - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		done += n;
	}
	return 0;
}

static void *serve(void *unused)
{
	char buffer[MAX_SIZE], eof;
	(void)unused;
	for (;;) {
		int fd = accept(listen_fd, NULL, NULL);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			return NULL; /* the listening socket was shut down: the run is over */
		}
		if (transfer(fd, buffer, size, 0) == 0 && transfer(fd, buffer, size, 1) == 0)
			while (read(fd, &eof, 1) > 0) /* wait for the client's FIN */
				;
		close(fd);
	}
}

/* UDP echo: each datagram back to its sender; an empty one ends the thread. */
static void *echo(void *unused)
{
	char buffer[MAX_SIZE];
	struct sockaddr_in peer;
	(void)unused;
	for (;;) {
		socklen_t length = sizeof peer;
		ssize_t n = recvfrom(udp_fd, buffer, sizeof buffer, 0, (struct sockaddr *)&peer, &length);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return NULL;
		sendto(udp_fd, buffer, n, 0, (struct sockaddr *)&peer, length);
	}
}

/* Until connection n's turn: started + n / rate. */
static void pace(long n)
{
	if (rate <= 0)
		return;
	double at = started + n / rate;
	struct timespec ts = {(time_t)at, (long)((at - (time_t)at) * 1e9)};
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

/* UDP_PER_CONNECTION datagrams out and back on `fd`, connected to the echo socket. */
static int udp_exchange(int fd, char *buffer)
{
	for (int i = 0; i < udp_per_connection; i++)
		if (send(fd, buffer, size, 0) != size || recv(fd, buffer, size, 0) != size)
			return -1;
	return 0;
}

static void *client(void *unused)
{
	char buffer[MAX_SIZE];
	int udp = -1;
	long n;
	(void)unused;
	memset(buffer, 'g', sizeof buffer);
	if (udp_per_connection) {
		struct timeval timeout = {1, 0}; /* a datagram lost on loopback is an error, not a hang */
		udp = socket(AF_INET, SOCK_DGRAM, 0);
		setsockopt(udp, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
		if (udp < 0 || connect(udp, (struct sockaddr *)&udp_addr, sizeof udp_addr) < 0)
			return NULL;
	}
	while ((n = atomic_fetch_add(&claimed, 1)) < count_wanted && now() - started < seconds_allowed) {
		pace(n);
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		int failed = fd < 0 || connect(fd, (struct sockaddr *)&server_addr, sizeof server_addr) < 0
			     || transfer(fd, buffer, size, 1) < 0 || transfer(fd, buffer, size, 0) < 0;
		if (fd >= 0)
			close(fd);
		if (failed || (udp >= 0 && udp_exchange(udp, buffer) < 0))
			atomic_fetch_add(&errors, 1);
		else
			atomic_fetch_add(&completed, 1);
	}
	if (udp >= 0)
		close(udp);
	return NULL;
}

static int udp_listen(void)
{
	socklen_t length = sizeof udp_addr;
	udp_fd = socket(AF_INET, SOCK_DGRAM, 0);
	udp_addr.sin_family = AF_INET;
	udp_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return udp_fd < 0 || bind(udp_fd, (struct sockaddr *)&udp_addr, sizeof udp_addr) < 0
	       || getsockname(udp_fd, (struct sockaddr *)&udp_addr, &length) < 0 ? -1 : 0;
}

int main(int argc, char **argv)
{
	int threads = argc > 3 ? atoi(argv[3]) : 2;
	pthread_t servers[MAX_THREADS], clients[MAX_THREADS], echoes[MAX_THREADS];
	socklen_t length = sizeof server_addr;
	int one = 1;

	size = argc > 4 ? atoi(argv[4]) : 64;
	rate = argc > 5 ? atof(argv[5]) : 0;
	udp_per_connection = argc > 6 ? atoi(argv[6]) : 0;
	if (argc < 3 || argc > 7 || (count_wanted = atol(argv[1])) <= 0 || (seconds_allowed = atof(argv[2])) <= 0
	    || threads < 1 || threads > MAX_THREADS || size < 1 || size > MAX_SIZE || rate < 0
	    || udp_per_connection < 0 || udp_per_connection > 1000) {
		fprintf(stderr, "usage: loadgen COUNT SECONDS [THREADS(1-%d) [SIZE(1-%d) [RATE(0: unlimited) "
			"[UDP(0-1000)]]]]\n", MAX_THREADS, MAX_SIZE);
		return 2;
	}
	listen_fd = socket(AF_INET, SOCK_STREAM, 0);
	server_addr.sin_family = AF_INET;
	server_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(listen_fd, (struct sockaddr *)&server_addr, sizeof server_addr) < 0 || listen(listen_fd, 4096) < 0
	    || getsockname(listen_fd, (struct sockaddr *)&server_addr, &length) < 0) {
		fprintf(stderr, "loadgen: cannot listen on 127.0.0.1: %s\n", strerror(errno));
		return 1;
	}
	if (udp_per_connection && udp_listen() < 0) {
		fprintf(stderr, "loadgen: cannot bind UDP on 127.0.0.1: %s\n", strerror(errno));
		return 1;
	}
	for (int i = 0; i < threads; i++) {
		pthread_create(&servers[i], NULL, serve, NULL);
		if (udp_per_connection)
			pthread_create(&echoes[i], NULL, echo, NULL);
	}
	started = now();
	for (int i = 0; i < threads; i++)
		pthread_create(&clients[i], NULL, client, NULL);
	for (int i = 0; i < threads; i++)
		pthread_join(clients[i], NULL);
	double elapsed = now() - started;
	shutdown(listen_fd, SHUT_RDWR);
	for (int i = 0; i < threads; i++)
		pthread_join(servers[i], NULL);
	close(listen_fd);
	if (udp_per_connection) {
		for (int i = 0; i < threads; i++) /* an empty datagram ends an echo thread */
			sendto(udp_fd, "", 0, 0, (struct sockaddr *)&udp_addr, sizeof udp_addr);
		for (int i = 0; i < threads; i++)
			pthread_join(echoes[i], NULL);
		close(udp_fd);
	}
	struct rusage usage;
	getrusage(RUSAGE_SELF, &usage);
	double cpu = usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 + usage.ru_stime.tv_sec
		     + usage.ru_stime.tv_usec / 1e6;
	printf("{\"connections\": %ld, \"errors\": %ld, \"seconds\": %.6f, \"per_second\": %.1f, \"cpu_s\": %.6f, "
	       "\"threads\": %d, \"size\": %d, \"port\": %d, \"rate\": %.1f, \"udp\": %d}\n",
	       (long)completed, (long)errors, elapsed, completed / elapsed, cpu, threads, size,
	       ntohs(server_addr.sin_port), rate, udp_per_connection);
	return errors ? 1 : 0;
}
