include $(sort $(wildcard $(BR2_EXTERNAL_BRANCHREC_PATH)/package/*/*.mk))
