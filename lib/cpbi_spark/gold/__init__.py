"""silver -> gold: conformed facts in the reporting currency and BI-ready marts."""
