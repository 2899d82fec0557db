"""The session factory: its JVM options reach the running JVM and never replace the user's own."""

from __future__ import annotations

from cpbi_spark.session import with_java_options


def test_the_factorys_option_reaches_the_jvm_and_the_users_own_comes_later_and_wins(spark):
    # The shared test session was built by get_spark: its option must be on the JVM's command line, and
    # the session's own spark.driver.extraJavaOptions (conftest: the opposite setting, for tiny test data)
    # after it, so the JVM runs with the user's value.
    jvm = spark._jvm
    args = list(jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
    ours, users = "-XX:-DontCompileHugeMethods", "-XX:+DontCompileHugeMethods"
    assert ours in args and users in args and args.index(ours) < args.index(users), args
    hotspot = jvm.java.lang.management.ManagementFactory.getPlatformMXBean(
        jvm.java.lang.Class.forName("com.sun.management.HotSpotDiagnosticMXBean"))
    assert hotspot.getVMOption("DontCompileHugeMethods").getValue() == "true"
    assert ours in spark.conf.get("spark.executor.defaultJavaOptions")


def test_java_options_are_added_to_the_users_own():
    conf = with_java_options({"spark.driver.defaultJavaOptions": "-Xss8m -Dfoo=bar", "spark.x": "1",
                              "spark.executor.extraJavaOptions": "-Dlog=x"})
    assert conf["spark.driver.defaultJavaOptions"] == "-Xss8m -Dfoo=bar -XX:-DontCompileHugeMethods"
    assert conf["spark.executor.defaultJavaOptions"] == "-XX:-DontCompileHugeMethods"
    assert conf["spark.executor.extraJavaOptions"] == "-Dlog=x"  # the user's own options are not touched
    assert conf["spark.x"] == "1"


def test_a_users_explicit_setting_of_the_flag_wins():
    conf = with_java_options({"spark.executor.defaultJavaOptions": "-XX:+DontCompileHugeMethods"})
    assert conf["spark.executor.defaultJavaOptions"] == "-XX:+DontCompileHugeMethods"
