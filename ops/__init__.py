"""Operations: the output-directory lock, the run ledger, structured logs, the scheduler and the shared
(Redis) crawl frontier — what makes unattended and multi-process runs safe and observable."""
