SHOW DateStyle
