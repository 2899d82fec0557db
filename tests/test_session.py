"""The session factory: its JVM options reach the running JVM and never replace the user's own."""

from __future__ import annotations

from cpbi_spark.session import with_java_options


def test_the_running_jvm_compiles_huge_methods(spark):
    # The shared test session was built by get_spark: the option must be on the JVM's command line.
    runtime = spark._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean()
    assert "-XX:-DontCompileHugeMethods" in list(runtime.getInputArguments())
    assert "-XX:-DontCompileHugeMethods" in spark.conf.get("spark.executor.defaultJavaOptions")


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
