/* logfile: a file it reads (DIR/data.txt, at offset 2) and a log it only writes (DIR/log.txt, O_WRONLY,
 * not O_APPEND: like a shell's `> log` redirection), both written before READY. After SIGUSR1 it reads
 * the rest of the data file and writes "after" to the log at its own offset. Usage: logfile DIR */
#include "e2e.h"

int main(int argc, char **argv)
{
    e2e_init();
    MUST(argc > 1);
    char data[4096], logp[4096];
    snprintf(data, sizeof data, "%s/data.txt", argv[1]);
    snprintf(logp, sizeof logp, "%s/log.txt", argv[1]);
    int w = open(data, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    MUST(w >= 0 && write(w, "0123456789", 10) == 10 && close(w) == 0);
    int d = open(data, O_RDONLY);
    char b[16] = { 0 };
    MUST(d >= 0 && read(d, b, 2) == 2);
    int l = open(logp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    MUST(l >= 0 && write(l, "before\n", 7) == 7);
    say("READY");
    e2e_wait_usr1();
    memset(b, 0, sizeof b);
    CHECK(read(d, b, sizeof b - 1) == 8 && strcmp(b, "23456789") == 0, "the data file reads '%s'", b);
    CHECK(lseek(l, 0, SEEK_CUR) == 7, "the log is at offset %ld, not 7", (long)lseek(l, 0, SEEK_CUR));
    CHECK(write(l, "after\n", 6) == 6, "write to the log: %s", strerror(errno));
    return e2e_finish();
}
