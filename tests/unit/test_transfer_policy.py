from migrator.transfer import worth_compressing

MiB = 1048576


def test_random_pages_are_sent_raw() -> None:
    assert not worth_compressing(8 * MiB, 8 * MiB + 300, 0.02, 400 * MiB)


def test_text_pages_on_a_slow_link_are_compressed() -> None:
    assert worth_compressing(8 * MiB, MiB, 0.02, 110 * MiB)


def test_compressor_slower_than_a_fast_link_is_skipped() -> None:
    # 8 MiB in 0.1 s = 80 MiB/s compressor vs a 1 GiB/s link at ratio 0.5
    assert not worth_compressing(8 * MiB, 4 * MiB, 0.1, 1024 * MiB)


def test_unknown_link_compresses() -> None:
    assert worth_compressing(8 * MiB, 8 * MiB, 0.02, 0.0)
